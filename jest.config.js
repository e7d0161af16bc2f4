/** Tests run a real Temporal dev server and real processes: serial, generous timeouts. */
module.exports = {
  preset: 'ts-jest',
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  testTimeout: 240_000,
  setupFiles: ['<rootDir>/test/support/setup.ts'],
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: { module: 'commonjs', esModuleInterop: true, strict: true, skipLibCheck: true, types: ['node', 'jest'] }, diagnostics: { warnOnly: false } }] },
};
