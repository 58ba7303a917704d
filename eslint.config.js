// Typed lint for the whole monorepo: the rules that catch real bugs (floating promises, type-only imports,
// import cycles, deep imports into other packages, console output from libraries).
import js from "@eslint/js";
import { createTypeScriptImportResolver } from "eslint-import-resolver-typescript";
import { importX } from "eslint-plugin-import-x";
import globals from "globals";
import ts from "typescript";
import tseslint from "typescript-eslint";

/**
 * No import cycles, `import type` included. import-x/no-cycle drops type-only imports from its walk without
 * an option to keep them (checked in eslint-plugin-import-x 4.18: `importKind === "type"` and
 * `isOnlyImportingTypes` are skipped unconditionally), yet two modules that need each other's types are one
 * module in two files: neither can move, be read or be tested alone. This rule walks the import graph of the
 * TypeScript program the typed rules already build (every import, export-from, `import()` and `import("x").T`
 * counts; packages resolve by name to their sources) and reports each import whose target leads back.
 */
const noImportCycle = {
  meta: {
    type: "problem",
    docs: { description: "Forbid import cycles, type-only imports included." },
    schema: [],
    messages: { cycle: "Import cycle (type-only imports count): {{route}}" },
  },
  create(context) {
    const program = context.sourceCode.parserServices?.program;
    if (program === undefined || program === null) return {};
    const graph = moduleGraph(program);
    const file = program.getSourceFile(context.physicalFilename);
    const component = file === undefined ? undefined : graph.component.get(file.fileName);
    if (file === undefined || component === undefined) return {};
    return {
      Program() {
        for (const { target, node } of graph.imports.get(file.fileName) ?? []) {
          if (target === file.fileName || graph.component.get(target) !== component) continue;
          const route = [file.fileName, ...pathBetween(graph, target, file.fileName)].map((name) => relative(program, name));
          const loc = { start: context.sourceCode.getLocFromIndex(node.getStart(file)), end: context.sourceCode.getLocFromIndex(node.getEnd()) };
          context.report({ loc, messageId: "cycle", data: { route: route.join(" → ") } });
        }
      },
    };
  },
};

/** Per program: each project file's resolved imports, and its strongly connected component (Tarjan). */
const graphs = new WeakMap();

function moduleGraph(program) {
  let graph = graphs.get(program);
  if (graph !== undefined) return graph;
  const checker = program.getTypeChecker();
  const imports = new Map();
  const own = (sourceFile) => !sourceFile.isDeclarationFile && !sourceFile.fileName.includes("/node_modules/");
  for (const sourceFile of program.getSourceFiles()) {
    if (!own(sourceFile)) continue;
    const found = [];
    const visit = (node) => {
      const specifier =
        (ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) ? node.moduleSpecifier
        : ts.isImportEqualsDeclaration(node) && ts.isExternalModuleReference(node.moduleReference) ? node.moduleReference.expression
        : ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword ? node.arguments[0]
        : ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument) ? node.argument.literal
        : undefined;
      if (specifier !== undefined && ts.isStringLiteralLike(specifier)) {
        const target = checker.getSymbolAtLocation(specifier)?.declarations?.find((d) => ts.isSourceFile(d));
        if (target !== undefined && own(target)) found.push({ target: target.fileName, node: specifier });
      }
      ts.forEachChild(node, visit);
    };
    visit(sourceFile);
    imports.set(sourceFile.fileName, found);
  }
  // Tarjan's strongly connected components, iteratively (import chains can be deep).
  const component = new Map();
  const index = new Map();
  const low = new Map();
  const stack = [];
  const onStack = new Set();
  let counter = 0;
  for (const root of imports.keys()) {
    if (index.has(root)) continue;
    const work = [{ name: root, next: 0 }];
    index.set(root, counter);
    low.set(root, counter++);
    stack.push(root);
    onStack.add(root);
    while (work.length > 0) {
      const frame = work.at(-1);
      const edges = imports.get(frame.name) ?? [];
      if (frame.next < edges.length) {
        const target = edges[frame.next++].target;
        if (!index.has(target)) {
          index.set(target, counter);
          low.set(target, counter++);
          stack.push(target);
          onStack.add(target);
          work.push({ name: target, next: 0 });
        } else if (onStack.has(target)) {
          low.set(frame.name, Math.min(low.get(frame.name), index.get(target)));
        }
        continue;
      }
      work.pop();
      if (work.length > 0) {
        const parent = work.at(-1).name;
        low.set(parent, Math.min(low.get(parent), low.get(frame.name)));
      }
      if (low.get(frame.name) === index.get(frame.name)) {
        for (;;) {
          const member = stack.pop();
          onStack.delete(member);
          component.set(member, frame.name);
          if (member === frame.name) break;
        }
      }
    }
  }
  graph = { imports, component };
  graphs.set(program, graph);
  return graph;
}

/** The shortest chain of imports from `from` to `to` (both in one component), `from` and `to` included. */
function pathBetween(graph, from, to) {
  const previous = new Map([[from, undefined]]);
  const queue = [from];
  while (queue.length > 0) {
    const name = queue.shift();
    if (name === to) break;
    for (const { target } of graph.imports.get(name) ?? []) {
      if (previous.has(target) || graph.component.get(target) !== graph.component.get(from)) continue;
      previous.set(target, name);
      queue.push(target);
    }
  }
  const path = [];
  for (let name = to; name !== undefined; name = previous.get(name)) path.unshift(name);
  return path;
}

function relative(program, fileName) {
  const root = program.getCurrentDirectory().replace(/\/$/, "");
  return fileName.startsWith(`${root}/`) ? fileName.slice(root.length + 1) : fileName;
}

export default tseslint.config(
  { ignores: ["**/dist/**", "**/node_modules/**", "libs/proto/src/gen/**", "coverage/**", "out/**", ".poseloop/**"] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      globals: globals.node,
      parserOptions: { project: "./tsconfig.test.json", tsconfigRootDir: import.meta.dirname },
    },
    plugins: { "import-x": importX, poseloop: { rules: { "no-import-cycle": noImportCycle } } },
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
      // poseloop/no-import-cycle (above) counts type-only imports too; import-x/no-cycle stays for JS files.
      "poseloop/no-import-cycle": "error",
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
            { group: ["@poseloop/trainer", "@poseloop/inferencer", "@poseloop/cli", "@poseloop/cli/*"], message: "Libraries never import services or apps." },
          ],
        },
      ],
    },
  },
  {
    // The SDK is what other programs embed: gRPC and the contracts only, no image, video, data or training code.
    files: ["libs/client/src/**/*.ts"],
    ignores: ["**/*.test.ts", "**/testing/**"],
    rules: {
      "no-restricted-imports": [
        "error",
        {
          patterns: [
            { group: ["@poseloop/*/src/*", "@poseloop/*/dist/*"], message: "Import a package by name through its exports." },
            { group: ["@poseloop/trainer", "@poseloop/inferencer", "@poseloop/cli", "@poseloop/cli/*"], message: "Libraries never import services or apps." },
            {
              group: ["@poseloop/*", "!@poseloop/core", "!@poseloop/grpc", "!@poseloop/proto", "!@poseloop/proto/*", "sharp", "@ffmpeg-installer/*", "onnxruntime-node"],
              message: "The SDK depends on core, grpc and proto only; image, video, data and training code belongs to apps/poseloop.",
            },
          ],
        },
      ],
    },
  },
  {
    files: ["services/**/*.ts"],
    rules: {
      "no-restricted-imports": [
        "error",
        {
          patterns: [
            { group: ["@poseloop/*/src/*", "@poseloop/*/dist/*"], message: "Import a package by name through its exports." },
            { group: ["**/libs/*/src/*", "**/services/*/src/*"], message: "Import another package by name, never by path." },
            { group: ["@poseloop/cli", "@poseloop/cli/*"], message: "Services never import the CLI." },
          ],
        },
      ],
    },
  },
  {
    files: ["services/trainer/**/*.ts"],
    rules: { "no-restricted-syntax": ["error", { selector: "ImportDeclaration[source.value=/^@poseloop\\/inferencer/]", message: "Services never import each other: they share proto contracts over gRPC and NATS." }] },
  },
  {
    files: ["services/inferencer/**/*.ts"],
    rules: { "no-restricted-syntax": ["error", { selector: "ImportDeclaration[source.value=/^@poseloop\\/trainer/]", message: "Services never import each other: they share proto contracts over gRPC and NATS." }] },
  },
  {
    files: ["**/*.js", "**/*.mjs"],
    ...tseslint.configs.disableTypeChecked,
    rules: { ...tseslint.configs.disableTypeChecked.rules, "poseloop/no-import-cycle": "off", "import-x/no-cycle": "error" },
  },
);
