/** The errno code of a Node system error (`'ENOENT'`, `'EEXIST'`...), if it has one. */
export function errnoCode(e: unknown): string | undefined {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}
