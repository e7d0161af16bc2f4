import { createRequire } from 'node:module';

/**
 * hyparquet ships as ES modules only, and this project compiles to CommonJS. Node loads them with
 * require() from 20.19 on; jest's module registry cannot, so they go through Node's own loader (a
 * require made by createRequire), which works in both. Older Node falls back to a real import().
 */
const nodeRequire = createRequire(__filename);

export async function loadEsm<T>(specifier: string): Promise<T> {
  try {
    return nodeRequire(specifier) as T;
  } catch (e) {
    if ((e as { code?: string }).code !== 'ERR_REQUIRE_ESM') throw e;
    // Written so that TypeScript's CommonJS output keeps it an import(), not a require().
    return (await new Function('s', 'return import(s)')(specifier)) as T;
  }
}
