import { fileURLToPath } from 'node:url';
import type { StoreBackend } from './backend';
import { LocalBackend } from './local';
import { parseS3Url } from './location';
import { Store } from './store';

/** Opens the store at a canonical URL (see normaliseStoreUrl). S3 is loaded only when used. */
export async function openStore(url: string): Promise<Store> {
  let backend: StoreBackend;
  if (url.startsWith('s3://')) {
    const s3 = parseS3Url(url);
    if (typeof s3 === 'string') throw new Error(`artifact store ${url}: ${s3}`);
    const { S3Backend } = await import('./s3');
    backend = new S3Backend(s3);
  } else backend = new LocalBackend(fileURLToPath(url));
  return new Store(backend);
}
