import { createRequire } from 'node:module';

/**
 * hyparquet ships as ES modules only, and this project compiles to CommonJS. Node loads them with
 * require() from 20.19 on (package.json's engines); jest's module registry cannot, so they go
 * through Node's own loader (a require made by createRequire), which works in both.
 */
const nodeRequire = createRequire(__filename);

export async function loadEsm<T>(specifier: string): Promise<T> {
  return Promise.resolve(nodeRequire(specifier) as T);
}
