import type { DataConverter } from '@temporalio/common';
import { EncryptionCodec } from './codec';

/**
 * The data converter shared by the client and every worker: with `SLEARN_PAYLOAD_KEY` set, every
 * payload is encrypted with AES-256-GCM, and so are failure messages and stack traces (see
 * failureConverter.ts; `audit` and the codec server decode them). Without a key, the SDK's
 * defaults. A malformed key throws here, so a misconfigured client or worker stops before it
 * touches Temporal.
 */
export function dataConverter(env: NodeJS.ProcessEnv = process.env): DataConverter {
  const codec = EncryptionCodec.fromEnv(env);
  return codec ? { payloadCodecs: [codec], failureConverterPath: require.resolve('./failureConverter') } : {};
}
