/**
 * temporal-compose.yml is the production picture, and no Docker engine runs here: this test checks
 * it against the code instead. Every queue has a worker, every variable a slearn service is given
 * is one the code reads, the model server and the adapter stager see adapters at the same path,
 * the training worker gets a GPU, and the example config points at the services that exist.
 */
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import * as ts from 'typescript';
import { parse } from 'yaml';
import { ALL_QUEUES } from '../src/schemas/run';
import { loadConfig } from '../src/config';
import { sourceFiles } from './support/imports';
import { ROOT } from './support/stack';

interface Service {
  image?: string;
  build?: { context: string; dockerfile: string };
  command?: string[];
  environment?: Record<string, string>;
  volumes?: string[];
  ports?: string[];
  deploy?: { resources?: { reservations?: { devices?: { driver: string; capabilities: string[] }[] } } };
  depends_on?: unknown;
  entrypoint?: string[];
}

const compose = parse(readFileSync(join(ROOT, 'temporal-compose.yml'), 'utf8'), { merge: true }) as {
  services: Record<string, Service>;
  volumes: Record<string, unknown>;
};
const services = compose.services;
const slearnServices = Object.entries(services).filter(([, s]) => s.command?.includes('bin/slearn.js'));

/**
 * The environment variable names src/ can read, from its syntax tree (comments do not count): every
 * `env.NAME` / `process.env.NAME`, and every string literal shaped like a variable name (names kept
 * in constants, such as KEY_ENV = 'SLEARN_PAYLOAD_KEY', and read as `env[KEY_ENV]`).
 */
function variablesTheCodeReads(): Set<string> {
  const names = new Set<string>();
  for (const file of sourceFiles(join(ROOT, 'src'))) {
    const sf = ts.createSourceFile(file, readFileSync(join(ROOT, 'src', file), 'utf8'), ts.ScriptTarget.ES2022, true);
    const visit = (node: ts.Node) => {
      if (ts.isPropertyAccessExpression(node) && /(^|\.)env$/.test(node.expression.getText(sf))) names.add(node.name.text);
      if ((ts.isStringLiteral(node) || ts.isNoSubstitutionTemplateLiteral(node)) && /^[A-Z][A-Z0-9_]+$/.test(node.text)) names.add(node.text);
      ts.forEachChild(node, visit);
    };
    visit(sf);
  }
  return names;
}

describe('temporal-compose.yml', () => {
  it('has Temporal on PostgreSQL with its UI, an S3 store, vLLM and the three slearn workers', () => {
    for (const s of ['postgresql', 'temporal', 'temporal-ui', 's3', 's3-init', 'vllm', 'slearn-worker', 'slearn-train', 'slearn-model'])
      expect(services[s]).toBeDefined();
    expect(services.temporal.ports).toContain('127.0.0.1:7233:7233');
    expect(services['temporal-ui'].environment?.TEMPORAL_ADDRESS).toBe('temporal:7233');
  });

  it('runs a worker for every task queue the workflow uses, and no queue the code does not know', () => {
    const queues = slearnServices.flatMap(([, s]) => {
      const i = s.command!.indexOf('--queue');
      return i >= 0 ? [s.command![i + 1]] : [];
    });
    expect(queues.sort()).toEqual([...ALL_QUEUES].sort());
  });

  it('gives slearn services only variables the code reads', () => {
    const read = variablesTheCodeReads();
    expect(read).toContain('SLEARN_PAYLOAD_KEY'); // read through a constant
    expect(read).toContain('SLEARN_SCRATCH'); // read as env.SLEARN_SCRATCH
    expect(read).not.toContain('VLLM_ALLOW_RUNTIME_LORA_UPDATING'); // only named inside a message to the user
    for (const [, s] of slearnServices) {
      for (const name of Object.keys(s.environment ?? {})) {
        if (name.startsWith('AWS_')) continue; // read by the AWS SDK itself
        if (name.startsWith('TEMPORAL_')) {
          expect(['TEMPORAL_ADDRESS', 'TEMPORAL_NAMESPACE']).toContain(name); // read by @temporalio/envconfig
          continue;
        }
        expect({ name, read: read.has(name) }).toEqual({ name, read: true });
      }
      expect(s.environment?.TEMPORAL_ADDRESS).toBe('temporal:7233');
      expect(s.environment?.AWS_ENDPOINT_URL_S3).toMatch(/^http:\/\/s3:\d+$/);
    }
  });

  it('builds the slearn image from the Dockerfile in the repository', () => {
    for (const [, s] of slearnServices) expect(s.build).toEqual({ context: '.', dockerfile: 'Dockerfile' });
    const dockerfile = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
    expect(dockerfile).toMatch(/npm ci/);
    expect(dockerfile).toMatch(/CMD \["node", "bin\/slearn\.js", "worker"\]/);
    for (const m of dockerfile.matchAll(/^COPY (\S+(?: \S+)*) \S+$/gm)) {
      for (const f of m[1].split(' ')) expect(() => statSync(join(ROOT, f))).not.toThrow();
    }
  });

  it('stages adapters where vLLM reads them: the same volume at the same path, runtime LoRA loading on', () => {
    const model = services['slearn-model'];
    const dir = model.command![model.command!.indexOf('--adapter-dir') + 1];
    const mount = (s: Service) => s.volumes?.find((v) => v.split(':')[1] === dir)?.split(':')[0];
    expect(mount(model)).toBeDefined();
    expect(mount(services.vllm)).toBe(mount(model));
    expect(compose.volumes).toHaveProperty(mount(model)!);
    expect(services.vllm.command).toContain('--enable-lora');
    expect(services.vllm.command).toContain('--max-lora-rank');
    expect(services.vllm.environment?.VLLM_ALLOW_RUNTIME_LORA_UPDATING).toBe('True');
  });

  it('reserves an NVIDIA GPU for training and for vLLM, and gives the trainer a scratch volume', () => {
    for (const s of [services['slearn-train'], services.vllm]) {
      expect(s.deploy?.resources?.reservations?.devices?.[0]).toMatchObject({ driver: 'nvidia', capabilities: ['gpu'] });
    }
    const train = services['slearn-train'];
    const scratch = train.command![train.command!.indexOf('--scratch') + 1];
    expect(train.volumes?.some((v) => v.endsWith(`:${scratch}`))).toBe(true);
  });

  it("the production example config validates and points at the compose file's vLLM and bucket", () => {
    const { config, store } = loadConfig(join(ROOT, 'examples', 'production', 'slearn.yaml'), { checkKeys: false });
    const vllmPort = services.vllm.command![services.vllm.command!.indexOf('--port') + 1];
    expect(config.model.baseUrl).toBe(`http://vllm:${vllmPort}/v1`);
    expect(config.model.name).toBe(services.vllm.command![services.vllm.command!.indexOf('--served-model-name') + 1]);
    expect(store).toBe('s3://slearn/runs');
    expect(services['s3-init'].entrypoint?.join(' ')).toContain('s3://slearn');
    expect(slearnServices[0][1].environment?.SLEARN_ALLOWED_ENDPOINTS).toBe(config.model.baseUrl.replace(/v1$/, ''));
    expect(store.startsWith(slearnServices[0][1].environment!.SLEARN_ALLOWED_STORES)).toBe(true);
  });
});
