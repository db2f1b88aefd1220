/**
 * Chooses the model provider named by the configuration (LONGRUN_PROVIDER).
 */
import type { ProviderConfig } from '../config.js';
import { createSimulatedProvider } from './simulated.js';
import type { ModelProvider } from './types.js';

/**
 * Creates the configured provider: `simulated` (the default), `bedrock` (region and credentials
 * from the AWS SDK's standard settings) or `openai` (OPENAI_BASE_URL, OPENAI_API_KEY).
 * LONGRUN_MODEL_ID, when set, replaces the provider's default model.
 */
export async function createProvider(config: ProviderConfig): Promise<ModelProvider> {
  switch (config.name) {
    case 'simulated':
      return createSimulatedProvider({
        ttftMs: config.simulated.ttftMs,
        tokensPerSecond: config.simulated.tokensPerSecond,
      });
    // The vendor SDKs load only when chosen, so the default start-up does not pay for them.
    case 'bedrock': {
      const { createBedrockProvider } = await import('./bedrock.js');
      return createBedrockProvider({ modelId: config.modelId });
    }
    case 'openai': {
      const { createOpenAIProvider } = await import('./openai.js');
      return createOpenAIProvider({
        baseUrl: config.openai.baseUrl,
        apiKey: config.openai.apiKey,
        modelId: config.modelId,
      });
    }
  }
}

export type { ModelProvider, ModelRequest, StreamPart } from './types.js';
