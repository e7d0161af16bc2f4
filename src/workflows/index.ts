export * from './selfLearning';
