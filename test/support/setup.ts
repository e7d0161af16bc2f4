import { installLogger } from '../../src/temporal/logging';

// In-process workers log at WARN so test output shows failures, not every state change.
installLogger('WARN');
