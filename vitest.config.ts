import { defineConfig } from "vitest/config";

// Workspace packages resolve to their TypeScript sources through the "@poseloop/source" export condition,
// so tests never need a build; `npm run build` emits dist/ for production.
const conditions = ["@poseloop/source", "node", "import", "default"];

export default defineConfig({
  resolve: { conditions },
  ssr: { resolve: { conditions, externalConditions: ["@poseloop/source"] } },
  test: {
    pool: "forks",
    reporters: ["default"],
    projects: [
      {
        extends: true,
        test: {
          name: "unit",
          include: ["libs/*/src/**/*.test.ts", "services/*/src/**/*.test.ts", "apps/*/src/**/*.test.ts"],
          exclude: ["**/*.int.test.ts", "**/node_modules/**"],
          testTimeout: 20_000,
        },
      },
      {
        extends: true,
        test: {
          name: "integration",
          include: ["libs/*/src/**/*.int.test.ts", "services/*/src/**/*.int.test.ts", "apps/*/src/**/*.int.test.ts", "test/**/*.int.test.ts"],
          exclude: ["**/node_modules/**"],
          globalSetup: ["libs/testkit/src/global-setup.ts"],
          testTimeout: 120_000,
          hookTimeout: 60_000,
        },
      },
    ],
  },
});
