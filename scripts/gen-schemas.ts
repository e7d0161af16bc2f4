// Writes the generated schema files from the zod schemas they come from. `npm run schemas`;
// test/schemas.test.ts fails when a committed file differs from what this would write.
import { writeFileSync } from 'node:fs';
import { generatedFiles } from '../src/schemas/generated';

for (const [file, text] of Object.entries(generatedFiles())) {
  writeFileSync(file, text);
  console.log(`wrote ${file}`);
}
