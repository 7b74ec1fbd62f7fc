/** The error a promise rejects with; fails the test when it resolves instead. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- tests inspect the error's own fields
export async function rejection(p: Promise<unknown>): Promise<any> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new Error('expected a rejection');
}
