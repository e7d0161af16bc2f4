export async function runDemo(_: { configFile: string; compareFull: boolean }): Promise<void> { throw new Error('demo: not wired yet'); }
