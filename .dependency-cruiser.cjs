// The import rules of src/ (DESIGN.md, "Layers"): no cycles, and every import goes down this list.
// Run by `npm run lint` (and so by `npm test`).
const LAYERS = [
  ['base', '^src/(errors|random|hash|version)\\.ts$'],
  ['recipe', '^src/recipe/'],
  ['tokenizer', '^src/tokenizer/'],
  ['data', '^src/data/'],
  ['model', '^src/model/'],
  ['storage', '^src/runs/(rundir|checkpoint|atomic)\\.ts$'],
  ['engine', '^src/engine/'],
  ['eval-core', '^src/eval/(?!(standalone|heldout|compare|index|lm-eval)\\.ts$)'],
  ['train', '^src/train/'],
  ['runs', '^src/runs/'],
  ['export', '^src/export/'],
  ['worker-rooms', '^src/(worker|rooms)/'],
  ['dispatch', '^src/dispatch/'],
  ['serve-eval', '^src/(serve/|eval/)'],
  ['cli', '^src/(cli/|api/|index\\.ts$)'],
];

// A file belongs to the first layer whose pattern matches it.
const notEarlier = (i) => LAYERS.slice(0, i).map(([, p]) => p);
const pathOf = (i) => ({ path: LAYERS[i][1], pathNot: notEarlier(i) });

const upward = [];
for (let i = 0; i < LAYERS.length; i++) {
  for (let j = i + 1; j < LAYERS.length; j++) {
    upward.push({
      name: `${LAYERS[i][0]}-imports-${LAYERS[j][0]}`,
      comment: `${LAYERS[i][0]} sits below ${LAYERS[j][0]} (DESIGN.md layers): import downwards only`,
      severity: 'error',
      from: { ...pathOf(i), pathNot: [...pathOf(i).pathNot, '\\.test\\.ts$', '/test/'] },
      to: pathOf(j),
    });
  }
}

module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      comment: 'src/ has no import cycles (value, type or dynamic imports)',
      severity: 'error',
      from: { path: '^src/', pathNot: ['\\.test\\.ts$', '/test/'] },
      to: { circular: true },
    },
    {
      name: 'unlayered',
      comment: 'every module of src/ belongs to a layer; add new folders to LAYERS',
      severity: 'error',
      from: { path: '^src/', pathNot: [...LAYERS.map(([, p]) => p), '\\.test\\.ts$', '/test/', '\\.d\\.ts$'] },
      to: {},
    },
    ...upward,
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: ['\\.test\\.ts$', '/test/', 'node_modules'] },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'default'] },
  },
};
