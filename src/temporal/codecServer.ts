import { timingSafeEqual } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { Payload } from '@temporalio/common';
import { readAll, TooLarge } from '../streams';
import type { EncryptionCodec } from './codec';

interface JsonPayload {
  metadata?: Record<string, string>;
  data?: string;
}

const toPayload = (p: JsonPayload): Payload => ({
  metadata: Object.fromEntries(Object.entries(p.metadata ?? {}).map(([k, v]) => [k, new Uint8Array(Buffer.from(v, 'base64'))])),
  data: new Uint8Array(Buffer.from(p.data ?? '', 'base64')),
});
const toJson = (p: Payload): JsonPayload => ({
  metadata: Object.fromEntries(Object.entries(p.metadata ?? {}).map(([k, v]) => [k, Buffer.from(v).toString('base64')])),
  data: Buffer.from(p.data ?? new Uint8Array()).toString('base64'),
});

function sameToken(given: string | undefined, token: string): boolean {
  const a = Buffer.from(given ?? '');
  const b = Buffer.from(`Bearer ${token}`);
  return a.length === b.length && timingSafeEqual(a, b);
}

/**
 * Temporal's remote codec protocol (POST /decode and /encode with `{payloads: [...]}`), so the web
 * UI and `temporal workflow show --codec-endpoint` can show what SLEARN_PAYLOAD_KEY encrypted.
 * Answers only the UI's origin (CORS) and only requests bearing the token.
 */
export function codecServer(codec: EncryptionCodec, opts: { origins: string[]; token: string; maxBytes?: number }): Server {
  return createServer(async (req, res) => {
    const origin = req.headers.origin;
    if (origin && opts.origins.includes(origin)) {
      res.setHeader('Access-Control-Allow-Origin', origin);
      res.setHeader('Access-Control-Allow-Credentials', 'true');
      res.setHeader('Access-Control-Allow-Headers', 'Content-Type, X-Namespace, Authorization');
      res.setHeader('Access-Control-Allow-Methods', 'POST, OPTIONS');
      res.setHeader('Vary', 'Origin');
    }
    const send = (status: number, value: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(value));
    };
    try {
      if (req.method === 'OPTIONS') return void res.writeHead(origin && opts.origins.includes(origin) ? 204 : 403).end();
      if (origin && !opts.origins.includes(origin)) return send(403, { error: `origin ${origin} is not allowed` });
      if (req.method !== 'POST' || !['/decode', '/encode'].includes(req.url ?? '')) return send(404, { error: 'POST /decode or /encode' });
      if (!sameToken(req.headers.authorization, opts.token)) return send(401, { error: 'a valid bearer token is required' });
      const parsed = JSON.parse((await readAll(req as AsyncIterable<Buffer>, opts.maxBytes ?? 8 << 20)).toString('utf8')) as { payloads?: JsonPayload[] };
      if (!Array.isArray(parsed.payloads)) return send(400, { error: 'body must be {"payloads": [...]}' });
      const payloads = parsed.payloads.map(toPayload);
      const out = req.url === '/decode' ? await codec.decode(payloads) : await codec.encode(payloads);
      send(200, { payloads: out.map(toJson) });
    } catch (e) {
      send(e instanceof TooLarge ? 413 : 400, { error: e instanceof TooLarge ? 'request too large' : (e as Error).message });
    }
  });
}
