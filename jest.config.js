/**
 * Tests run a real Temporal dev server and real processes: serial, generous timeouts. ts-jest only
 * transpiles (isolatedModules): type errors are caught once, by `tsc` over src/ and test/ in
 * `make lint`, instead of per test file.
 */
module.exports = {
  preset: 'ts-jest',
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  testTimeout: 240_000,
  setupFiles: ['<rootDir>/test/support/setup.ts'],
  transform: {
    '^.+\\.ts$': [
      'ts-jest',
      { tsconfig: { isolatedModules: true, module: 'commonjs', esModuleInterop: true, strict: true, skipLibCheck: true, types: ['node', 'jest'] } },
    ],
  },
};
