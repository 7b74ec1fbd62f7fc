/**
 * Type expectations for the public chunk-store API. Checked by `tsc --noEmit` (npm run typecheck):
 * a wrong type here is a compile error.
 */
import { expectTypeOf } from 'vitest';
import {
  ChunkStore,
  type ChunkList,
  type GcResult,
  type PutResult,
  type ReadDiskResult,
  type ThinDelta,
  type WriteDiskResult,
  changedChunks,
  parseThinDelta,
  readChunkList,
  readDiskFromStore,
  writeDiskToStore,
} from '../../../src/index.js';

expectTypeOf(ChunkStore.forDestination).returns.resolves.toEqualTypeOf<ChunkStore>();
declare const store: ChunkStore;
expectTypeOf(store.put).returns.resolves.toEqualTypeOf<PutResult>();
expectTypeOf(store.has).returns.resolves.toEqualTypeOf<boolean>();
expectTypeOf(store.get).returns.resolves.toEqualTypeOf<Buffer>();
expectTypeOf(store.reuse).returns.resolves.toEqualTypeOf<boolean>();
expectTypeOf(store.collectGarbage).returns.resolves.toEqualTypeOf<GcResult>();
expectTypeOf(store[Symbol.asyncDispose]).returns.resolves.toEqualTypeOf<void>();
expectTypeOf(writeDiskToStore).returns.resolves.toEqualTypeOf<WriteDiskResult>();
expectTypeOf<WriteDiskResult['rawSha256']>().toEqualTypeOf<string | undefined>();
expectTypeOf<ReadDiskResult['rawSha256']>().toEqualTypeOf<string | undefined>();
expectTypeOf(readChunkList).returns.resolves.toEqualTypeOf<ChunkList>();
expectTypeOf(readDiskFromStore).parameter(0).toEqualTypeOf<ChunkList>();
expectTypeOf(parseThinDelta).returns.toEqualTypeOf<ThinDelta>();
expectTypeOf(changedChunks).returns.toEqualTypeOf<number[]>();
declare const gc: GcResult;
if (gc.status === 'busy') expectTypeOf(gc.writers).toBeArray();
else expectTypeOf(gc.chunksRemoved).toBeNumber();
