import { createReadStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { checkKey, type StoreBackend } from './backend';
import type { S3Location } from './location';

/** Above this size a blob goes up in parts (and becomes visible only when the last part is in). */
const MULTIPART_BYTES = 64 << 20;
const PART_BYTES = 16 << 20;

const status = (e: unknown) => (e as S3ServiceException)?.$metadata?.httpStatusCode;
const notFound = (e: unknown) => status(e) === 404 || (e as Error)?.name === 'NoSuchKey' || (e as Error)?.name === 'NotFound';

/**
 * The store as S3-compatible object storage (AWS S3, or any server that speaks it). Endpoint,
 * region and credentials come from the standard AWS variables and files (AWS_ENDPOINT_URL_S3,
 * AWS_REGION, AWS_ACCESS_KEY_ID, AWS_PROFILE, ...), never from the config. Blobs are uploaded with
 * their SHA-256 for the server to check, and are visible under their address only once complete.
 */
export class S3Backend implements StoreBackend {
  readonly url: string;
  private readonly client: S3Client;

  constructor(
    private readonly loc: S3Location,
    config: S3ClientConfig = {},
  ) {
    this.url = `s3://${loc.bucket}${loc.prefix ? `/${loc.prefix}` : ''}`;
    this.client = new S3Client({
      // S3-compatible servers on a custom endpoint usually want path-style addressing.
      forcePathStyle: Boolean(process.env.AWS_ENDPOINT_URL_S3 ?? process.env.AWS_ENDPOINT_URL),
      region: process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? 'us-east-1',
      ...config,
    });
  }

  private key(key: string, prefix = false): string {
    checkKey(key, prefix);
    return this.loc.prefix ? `${this.loc.prefix}/${key}` : key;
  }

  spoolDir(): string {
    return join(tmpdir(), 'slearn-spool');
  }

  async publish(key: string, path: string, info: { sha256: string; bytes: number }): Promise<void> {
    try {
      if ((await this.size(key)) === info.bytes) return;
      const Key = this.key(key);
      if (info.bytes <= MULTIPART_BYTES) {
        await this.client.send(
          new PutObjectCommand({
            Bucket: this.loc.bucket,
            Key,
            Body: createReadStream(path),
            ContentLength: info.bytes,
            // The server recomputes the hash and refuses the object when the bytes differ.
            ChecksumSHA256: Buffer.from(info.sha256, 'hex').toString('base64'),
          }),
        );
      } else {
        await new Upload({
          client: this.client,
          params: { Bucket: this.loc.bucket, Key, Body: createReadStream(path), ChecksumAlgorithm: 'SHA256' },
          partSize: PART_BYTES,
          queueSize: 4,
          leavePartsOnError: false,
        }).done();
      }
      const size = await this.size(key);
      if (size !== info.bytes) throw new Error(`uploaded ${key} but the store reports ${size} bytes instead of ${info.bytes}`);
    } finally {
      await rm(path, { force: true });
    }
  }

  async put(key: string, body: Buffer, opts: { ifAbsent?: boolean; durable?: boolean } = {}): Promise<boolean> {
    try {
      await this.client.send(
        new PutObjectCommand({
          Bucket: this.loc.bucket,
          Key: this.key(key),
          Body: body,
          ContentLength: body.length,
          ...(opts.ifAbsent ? { IfNoneMatch: '*' } : {}),
        }),
      );
      return true;
    } catch (e) {
      // 412: the key exists; 409: a concurrent conditional write to it is in progress (S3 asks to retry; here it lost).
      if (opts.ifAbsent && (status(e) === 412 || status(e) === 409)) return false;
      throw e;
    }
  }

  async get(key: string): Promise<Readable | undefined> {
    try {
      const out = await this.client.send(new GetObjectCommand({ Bucket: this.loc.bucket, Key: this.key(key) }));
      return out.Body as Readable;
    } catch (e) {
      if (notFound(e)) return undefined;
      throw e;
    }
  }

  async size(key: string): Promise<number | undefined> {
    try {
      const out = await this.client.send(new HeadObjectCommand({ Bucket: this.loc.bucket, Key: this.key(key) }));
      return out.ContentLength;
    } catch (e) {
      if (notFound(e)) return undefined;
      throw e;
    }
  }

  async delete(key: string): Promise<void> {
    await this.client.send(new DeleteObjectCommand({ Bucket: this.loc.bucket, Key: this.key(key) }));
  }

  async list(prefix: string): Promise<string[]> {
    const full = this.key(prefix, true).replace(/\/?$/, '/');
    const strip = this.loc.prefix ? this.loc.prefix.length + 1 : 0;
    const out: string[] = [];
    let token: string | undefined;
    do {
      const page = await this.client.send(new ListObjectsV2Command({ Bucket: this.loc.bucket, Prefix: full, ContinuationToken: token }));
      for (const o of page.Contents ?? []) if (o.Key) out.push(o.Key.slice(strip));
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return out.sort();
  }

  async probe(): Promise<void> {
    const key = `tmp/probe-${process.pid}-${Date.now()}`;
    try {
      await this.put(key, Buffer.from('ok'));
      await this.delete(key);
    } catch (e) {
      const what = status(e) === 403 ? 'access denied (check AWS_ACCESS_KEY_ID / AWS_PROFILE)' : status(e) === 404 ? 'no such bucket' : (e as Error).message;
      throw new Error(`artifact store ${this.url} cannot be written: ${what}`, { cause: e });
    }
  }
}
