import { DefaultFailureConverter } from '@temporalio/common';

/**
 * Failure messages and stack traces moved into an encoded attribute, which the payload codec then
 * encrypts: with SLEARN_PAYLOAD_KEY set, no failure text is stored in plaintext either. Loaded by
 * path (the SDK's way), so the workflow bundle and the activities use the same converter.
 */
export const failureConverter = new DefaultFailureConverter({ encodeCommonAttributes: true });
