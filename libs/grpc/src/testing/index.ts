export { createTestPki } from "./test-certificates.js";
export type { TestPki } from "./test-certificates.js";
