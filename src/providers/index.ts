/**
 * Chooses the model provider named by the configuration (LONGRUN_PROVIDER).
 */
import type { ProviderConfig } from '../config.js';
import { createSimulatedProvider } from './simulated.js';
import type { ModelProvider } from './types.js';

/** Creates the configured provider. */
export async function createProvider(config: ProviderConfig): Promise<ModelProvider> {
  switch (config.name) {
    case 'simulated':
      return createSimulatedProvider({
        ttftMs: config.simulated.ttftMs,
        tokensPerSecond: config.simulated.tokensPerSecond,
      });
    case 'bedrock':
    case 'openai':
      throw new Error(`provider ${config.name} is not implemented yet`);
  }
}

export type { ModelProvider, ModelRequest, StreamPart } from './types.js';
