/**
 * Optional end-to-end encryption of Temporal payloads (workflow inputs and results, activity inputs
 * and results, heartbeat details, queries, signals): AES-256-GCM with node:crypto, applied by the
 * client and the workers as a `PayloadCodec`, so the Temporal server and its database only ever
 * store ciphertext.
 *
 * Wire format of an encrypted payload (the layout of Temporal's encryption samples):
 *   metadata: encoding = "binary/encrypted", encryption-cipher = "AES-256-GCM",
 *             encryption-key-id = <id of the key that encrypted it>
 *   data:     12-byte IV | ciphertext of the whole original Payload proto | 16-byte GCM tag
 *
 * Keys rotate: the key id is derived from the key itself, new payloads are encrypted with the
 * current key (`SLEARN_PAYLOAD_KEY`) and payloads of older runs are decrypted with any key in
 * `SLEARN_PAYLOAD_OLD_KEYS` (comma-separated), chosen by the id in their metadata.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { METADATA_ENCODING_KEY, type Payload, type PayloadCodec } from '@temporalio/common';
import { temporal } from '@temporalio/proto';

export const KEY_ENV = 'SLEARN_PAYLOAD_KEY';
export const OLD_KEYS_ENV = 'SLEARN_PAYLOAD_OLD_KEYS';
export const ALLOW_PLAINTEXT_ENV = 'SLEARN_PAYLOAD_ALLOW_PLAINTEXT';
export const ENCODING = 'binary/encrypted';
export const CIPHER = 'AES-256-GCM';
export const METADATA_KEY_ID = 'encryption-key-id';
export const METADATA_CIPHER = 'encryption-cipher';

const IV_BYTES = 12;
const TAG_BYTES = 16;
const KEY_BYTES = 32;
const PayloadProto = temporal.api.common.v1.Payload;

const utf8 = (s: string) => new Uint8Array(Buffer.from(s, 'utf8'));
const text = (b: Uint8Array | null | undefined) => (b ? Buffer.from(b).toString('utf8') : undefined);

/**
 * A 32-byte key from 64 hex digits or base64 (standard or URL-safe). `source` names where the text
 * came from, so that the error says which variable to fix.
 */
export function parseKey(value: string, source = KEY_ENV): Buffer {
  const v = value.trim();
  let key: Buffer | undefined;
  if (/^[0-9a-fA-F]+$/.test(v) && v.length === KEY_BYTES * 2) key = Buffer.from(v, 'hex');
  else if (/^[A-Za-z0-9+/_-]+={0,2}$/.test(v)) key = Buffer.from(v.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
  if (!key || key.length !== KEY_BYTES) {
    const got = key ? `${key.length} bytes` : 'neither hex nor base64';
    throw new Error(
      `${source} must be a 32-byte AES-256 key written as 64 hex digits or as base64 (got ${got}); ` +
        `generate one with \`openssl rand -base64 32\`, or unset ${source} to run without payload encryption`,
    );
  }
  return key;
}

/** A public, stable id for a key: 16 hex digits of its SHA-256 (reveals nothing about the key). */
export function keyId(key: Buffer): string {
  return createHash('sha256').update('slearn-payload-key\0').update(key).digest('hex').slice(0, 16);
}

export class EncryptionCodec implements PayloadCodec {
  private readonly keys = new Map<string, Buffer>();
  readonly keyId: string;

  /** `key` encrypts and decrypts; `oldKeys` only decrypt (payloads written before a rotation). */
  constructor(
    key: Buffer,
    oldKeys: Buffer[] = [],
    readonly allowPlaintext = false,
  ) {
    for (const k of [key, ...oldKeys]) {
      if (k.length !== KEY_BYTES) throw new Error(`an AES-256 key must be ${KEY_BYTES} bytes, got ${k.length}`);
      this.keys.set(keyId(k), k);
    }
    this.keyId = keyId(key);
  }

  /** The codec for `SLEARN_PAYLOAD_KEY` (+ `SLEARN_PAYLOAD_OLD_KEYS`), or undefined when it is unset. */
  static fromEnv(env: NodeJS.ProcessEnv = process.env): EncryptionCodec | undefined {
    const current = env[KEY_ENV]?.trim();
    if (!current) return undefined;
    const old = (env[OLD_KEYS_ENV] ?? '')
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean)
      .map((s) => parseKey(s, OLD_KEYS_ENV));
    return new EncryptionCodec(parseKey(current, KEY_ENV), old, env[ALLOW_PLAINTEXT_ENV] === '1');
  }

  async encode(payloads: Payload[]): Promise<Payload[]> {
    const key = this.keys.get(this.keyId)!;
    return payloads.map((payload) => {
      const plain = PayloadProto.encode(payload).finish();
      const iv = randomBytes(IV_BYTES);
      const cipher = createCipheriv('aes-256-gcm', key, iv);
      const data = Buffer.concat([iv, cipher.update(plain), cipher.final(), cipher.getAuthTag()]);
      return {
        metadata: {
          [METADATA_ENCODING_KEY]: utf8(ENCODING),
          [METADATA_CIPHER]: utf8(CIPHER),
          [METADATA_KEY_ID]: utf8(this.keyId),
        },
        data: new Uint8Array(data),
      };
    });
  }

  async decode(payloads: Payload[]): Promise<Payload[]> {
    return payloads.map((payload) => {
      if (text(payload.metadata?.[METADATA_ENCODING_KEY]) !== ENCODING) {
        // With a key set, a plaintext payload is someone else's input (a client without the key):
        // refused, unless an operator migrating older runs allows it on purpose.
        if (this.allowPlaintext) return payload;
        throw new Error(
          `refused a plaintext payload: ${KEY_ENV} is set, so every payload must be encrypted (set ${ALLOW_PLAINTEXT_ENV}=1 to read older unencrypted runs)`,
        );
      }
      const id = text(payload.metadata?.[METADATA_KEY_ID]);
      const key = id ? this.keys.get(id) : undefined;
      if (!key) {
        throw new Error(
          `payload encrypted with key id ${id ?? '(none)'}, which is not configured: set ${KEY_ENV} to that key, ` +
            `or list it in ${OLD_KEYS_ENV} (comma-separated) if it was rotated out`,
        );
      }
      const data = Buffer.from(payload.data ?? new Uint8Array());
      if (data.length < IV_BYTES + TAG_BYTES) throw new Error(`encrypted payload is too short (${data.length} bytes): corrupted`);
      const iv = data.subarray(0, IV_BYTES);
      const tag = data.subarray(data.length - TAG_BYTES);
      const decipher = createDecipheriv('aes-256-gcm', key, iv);
      decipher.setAuthTag(tag);
      let plain: Buffer;
      try {
        plain = Buffer.concat([decipher.update(data.subarray(IV_BYTES, data.length - TAG_BYTES)), decipher.final()]);
      } catch {
        throw new Error(`encrypted payload failed authentication (key id ${id}): it was tampered with, or the key under that id is wrong`);
      }
      return PayloadProto.decode(plain);
    });
  }
}
