import type { DataConverter } from '@temporalio/common';
import { EncryptionCodec } from './codec';

/**
 * The data converter shared by the client and every worker: payloads encrypted with AES-256-GCM
 * when `SLEARN_PAYLOAD_KEY` is set, the SDK's default otherwise. A malformed key throws here, so a
 * misconfigured client or worker stops before it touches Temporal.
 */
export function dataConverter(env: NodeJS.ProcessEnv = process.env): DataConverter {
  const codec = EncryptionCodec.fromEnv(env);
  return codec ? { payloadCodecs: [codec] } : {};
}
