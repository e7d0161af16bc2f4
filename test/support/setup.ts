import { DefaultLogger, Runtime } from '@temporalio/worker';

// In-process workers log at WARN so test output shows failures, not every state change.
Runtime.install({ logger: new DefaultLogger('WARN') });
