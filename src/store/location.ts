import { isAbsolute, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

/** Where a store is, as users write it in `artifacts:` and as runs carry it: checked and made canonical here, opened in open.ts. */

export interface S3Location {
  bucket: string;
  prefix: string;
}

/** `s3://bucket/prefix` → its parts, or a message saying what is wrong with it. */
export function parseS3Url(url: string): S3Location | string {
  const m = /^s3:\/\/([^/]*)(?:\/(.*))?$/.exec(url);
  if (!m) return 'must look like s3://bucket/prefix';
  const [, bucket, rest = ''] = m;
  // The S3 bucket naming rules, as AWS states them (also what S3-compatible servers expect).
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket) || bucket.includes('..')) {
    return `bucket "${bucket}" is not a valid S3 bucket name (3-63 characters: lower-case letters, digits, "." and "-")`;
  }
  const prefix = rest.replace(/\/+$/, '');
  if (prefix && !prefix.split('/').every((s) => /^[A-Za-z0-9][A-Za-z0-9._=-]*$/.test(s))) {
    return `prefix "${prefix}" may hold only letters, digits, ".", "_", "=" and "-" between slashes`;
  }
  return { bucket, prefix };
}

/** A store location as users write it (a path, file://, s3://) → its canonical URL, or a message. */
export function normaliseStoreUrl(location: string, relativeTo = process.cwd()): string | { error: string } {
  if (location.startsWith('s3:')) {
    const s3 = parseS3Url(location);
    if (typeof s3 === 'string') return { error: s3 };
    return `s3://${s3.bucket}${s3.prefix ? `/${s3.prefix}` : ''}`;
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(location) && !location.startsWith('file://')) {
    return { error: `unsupported scheme in "${location}": use a directory path, file:///path or s3://bucket/prefix` };
  }
  const path = location.startsWith('file://') ? fileURLToPath(location) : isAbsolute(location) ? location : resolve(relativeTo, location);
  return pathToFileURL(resolve(path)).href;
}
