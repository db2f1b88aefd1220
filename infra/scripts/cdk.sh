#!/bin/sh
# Runs the project's own CDK CLI on the longrun app, with everything that would reach the network
# at synth time turned off: notices, telemetry, the npm version check, the update notifier.
# CDK's cache and settings stay inside build/. Usage: sh infra/scripts/cdk.sh synth|deploy|destroy|diff [args]
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$root/build/cdk-home"
export CDK_HOME="$root/build/cdk-home"
export CDK_DISABLE_CLI_TELEMETRY=true
export CDK_DISABLE_VERSION_CHECK=1
export npm_config_update_notifier=false
export NO_UPDATE_NOTIFIER=1
# Synthesis needs no credentials: keep the SDK's credential chain off the EC2 metadata endpoint.
case "${1:-}" in
  synth | ls | list) export AWS_EC2_METADATA_DISABLED=true ;;
esac
cd "$root/infra"
exec "$root/node_modules/.bin/cdk" --no-notices "$@"
