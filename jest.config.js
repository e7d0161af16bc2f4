/**
 * Tests run a real Temporal dev server and real processes: serial within a lane, generous timeouts.
 * ts-jest only transpiles (isolatedModules): type errors are caught once, by `tsc` over src/ and
 * test/ in `make lint`, instead of per test file.
 *
 * Two projects, run as two lanes side by side by scripts/run-tests.js (`npx jest --runInBand`
 * still runs both, one after the other): `heavy`, the files that run the real trainer or the real
 * model for minutes, and `main`, the rest. Every test takes its own free ports and temporary
 * directories, so the lanes share nothing but the CPU.
 */
const HEAVY = ['chaos', 'realModel'];

const common = {
  preset: 'ts-jest',
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  setupFiles: ['<rootDir>/test/support/setup.ts'],
  transform: {
    '^.+\\.ts$': [
      'ts-jest',
      { tsconfig: { isolatedModules: true, module: 'commonjs', esModuleInterop: true, strict: true, skipLibCheck: true, types: ['node', 'jest'] } },
    ],
  },
};

module.exports = {
  testTimeout: 240_000,
  // One workflow bundle for every worker of the run (webpack per worker start cost 6-8 s).
  globalSetup: '<rootDir>/test/support/globalSetup.ts',
  globalTeardown: '<rootDir>/test/support/globalTeardown.ts',
  projects: [
    { ...common, displayName: 'heavy', testMatch: HEAVY.map((name) => `<rootDir>/test/${name}.test.ts`) },
    { ...common, displayName: 'main', testMatch: ['<rootDir>/test/**/*.test.ts'], testPathIgnorePatterns: HEAVY.map((name) => `/test/${name}\\.test\\.ts$`) },
  ],
};
