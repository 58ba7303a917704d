// Typed lint for the whole monorepo: the rules that catch real bugs (floating promises, type-only imports,
// import cycles, deep imports into other packages, console output from libraries).
import js from "@eslint/js";
import { createTypeScriptImportResolver } from "eslint-import-resolver-typescript";
import { importX } from "eslint-plugin-import-x";
import globals from "globals";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["**/dist/**", "**/node_modules/**", "libs/proto/src/gen/**", "coverage/**", "out/**", ".poseloop/**"] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      globals: globals.node,
      parserOptions: { project: "./tsconfig.test.json", tsconfigRootDir: import.meta.dirname },
    },
    plugins: { "import-x": importX },
    settings: {
      "import-x/extensions": [".ts", ".js", ".mjs"],
      "import-x/parsers": { "@typescript-eslint/parser": [".ts"] },
      "import-x/resolver-next": [
        createTypeScriptImportResolver({ project: "./tsconfig.test.json", conditionNames: ["@poseloop/source", "types", "import", "node", "default"] }),
      ],
    },
    rules: {
      "@typescript-eslint/no-floating-promises": "error",
      "@typescript-eslint/no-misused-promises": ["error", { checksVoidReturn: { arguments: false } }],
      "@typescript-eslint/consistent-type-imports": ["error", { fixStyle: "inline-type-imports" }],
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "@typescript-eslint/require-await": "off",
      // Forwarding a caught `unknown` as a rejection is normal; creating one from a non-Error is not.
      "@typescript-eslint/prefer-promise-reject-errors": ["error", { allowThrowingUnknown: true }],
      "import-x/no-cycle": "error",
      "import-x/no-self-import": "error",
      "no-restricted-imports": [
        "error",
        {
          patterns: [
            { group: ["@poseloop/*/src/*", "@poseloop/*/dist/*"], message: "Import a package by name through its exports." },
            { group: ["**/libs/*/src/*", "**/services/*/src/*"], message: "Import another package by name, never by path." },
          ],
        },
      ],
    },
  },
  {
    files: ["libs/**/*.ts"],
    ignores: ["**/*.test.ts", "libs/testkit/**", "**/testing/**"],
    rules: { "no-console": "error" },
  },
  {
    files: ["libs/**/*.ts"],
    rules: {
      "no-restricted-imports": [
        "error",
        {
          patterns: [
            { group: ["@poseloop/*/src/*", "@poseloop/*/dist/*"], message: "Import a package by name through its exports." },
            { group: ["@poseloop/trainer", "@poseloop/inferencer"], message: "Libraries never import services." },
          ],
        },
      ],
    },
  },
  { files: ["**/*.js", "**/*.mjs"], ...tseslint.configs.disableTypeChecked },
);
