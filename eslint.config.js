// Lint rules for the TypeScript sources: eslint's and typescript-eslint's
// recommended sets (no type-aware rules: they would double `tsc`'s time).
import js from '@eslint/js';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'build/**', 'node_modules/**', 'coverage/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  { languageOptions: { globals: globals.node } },
  {
    files: ['**/*.cjs'],
    languageOptions: { sourceType: 'commonjs' },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
  {
    files: ['test/e2e/suite/**', 'test/unit/**', 'test/native/**', 'test/cli/**'],
    rules: {
      // Tests poke at private shapes and malformed input on purpose.
      '@typescript-eslint/no-explicit-any': 'off',
    },
  },
  {
    rules: {
      // Control characters are matched on purpose (escaping them in messages, rejecting them in names).
      'no-control-regex': 'off',
      // `_`-prefixed parameters and caught errors are deliberately unused.
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
    },
  },
);
