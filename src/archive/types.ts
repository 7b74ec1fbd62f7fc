/** One progress report of a long archive operation (throttled; the last one is always sent). */
export interface ArchiveProgress {
  /**
   * 'pack' / 'unpack' / 'hash': raw bytes flowing; 'sync': all data written,
   * waiting for fsync (bytesDone = bytesTotal).
   */
  phase: 'pack' | 'unpack' | 'hash' | 'sync';
  /** Raw (uncompressed) bytes done so far. */
  bytesDone: number;
  /** Raw bytes in all, when known (file size, block device size, index). */
  bytesTotal?: number;
  /** Recent raw throughput in bytes per second (0 until measurable). */
  rate: number;
  /** Compressed bytes read or written so far. */
  storedBytes: number;
}

export type ProgressCallback = (event: ArchiveProgress) => void;

export interface PackOptions {
  /**
   * Compression level 1..9 with gzip's meaning (default 3): output no larger
   * than `gzip -N`'s, made by the fastest libdeflate level that achieves it.
   */
  level?: number;
  /** Raw bytes per gzip member: a number or a size such as '4M' (default 4 MiB; multiple of 4 KiB). */
  chunkSize?: number | string;
  /** Compression worker threads (default os.availableParallelism()). */
  threads?: number;
  /** Replace an existing destination file (default: refuse). */
  overwrite?: boolean;
  /** Read the source at most this fast, bytes per second (default: no cap). */
  bwlimit?: number;
  signal?: AbortSignal;
  onProgress?: ProgressCallback;
}

export interface PackResult {
  /** Raw bytes read from the source. */
  bytes: number;
  /** sha256 of the raw data (what `sha256sum SOURCE` prints). */
  sha256: string;
  /** Size of the compressed image. */
  storedBytes: number;
  /** sha256 of the compressed image file (what `sha256sum DEST` prints). */
  fileSha256: string;
  /** Raw bytes per member (the last member may hold fewer). */
  chunkSize: number;
  /** Level used (1..9, gzip's scale; see PackOptions.level). */
  level: number;
  /** Compressed offset of each gzip member, in order; members[i] holds raw bytes [i*chunkSize, (i+1)*chunkSize). */
  members: number[];
  /** Members that were all zeros (written without compressing). */
  zeroChunks: number;
  /** Members stored uncompressed (deflate level 0) because their data did not compress. */
  storedChunks: number;
  /** Wall-clock duration. */
  seconds: number;
}

/** What unpack/hash need to decompress members in parallel: a PackResult (or the manifest's copy) fits. */
export interface ImageIndex {
  chunkSize: number;
  /** Raw bytes in the image. */
  bytes: number;
  /** Compressed offset of each member. */
  members: readonly number[];
  /** Compressed size; checked against the file when given. */
  storedBytes?: number;
}

export interface UnpackOptions {
  /** Member index: enables parallel decompression; without it the image is streamed. */
  index?: ImageIndex;
  /** Decompression worker threads (default os.availableParallelism()). */
  threads?: number;
  /** Fail (after writing, before committing a file) unless the raw data has this sha256. */
  expectSha256?: string;
  /** Raw byte count the image must hold; also lets a block device's size be checked up front. */
  expectBytes?: number;
  /** Replace an existing regular destination file (default: refuse). Block devices are always written in place. */
  overwrite?: boolean;
  /** Also compute the compressed file's sha256 (fileSha256) in the same pass; costs CPU, off by default. */
  hashFile?: boolean;
  /**
   * Do not write all-zero chunks to a block device either: only for a device known to read as
   * zeros where nothing is written (a newly created thin LV, which then stays unallocated there).
   * A new regular file never gets its zero chunks written (they are holes) whatever this says.
   */
  skipZeros?: boolean;
  signal?: AbortSignal;
  onProgress?: ProgressCallback;
}

export interface UnpackResult {
  /** Raw bytes written. */
  bytes: number;
  /** sha256 of the raw data written. */
  sha256: string;
  /** Size of the compressed image read. */
  storedBytes: number;
  /** sha256 of the compressed image file (only with `hashFile`). */
  fileSha256?: string;
  /** true when expectSha256 was given and matched. */
  verified: boolean;
  /** 'parallel' with an index, 'stream' without. */
  mode: 'parallel' | 'stream';
  /** What was written to: a new regular file, or a block device in place. */
  destKind: 'file' | 'block';
  /** Chunks that were all zeros (holes in a new file, zeros written to a device); stream mode counts none. */
  zeroChunks: number;
  /** Raw bytes actually written; the rest were zeros left unwritten (holes of a new file, or `skipZeros`). */
  bytesWritten: number;
  seconds: number;
}

export interface HashOptions {
  index?: ImageIndex;
  threads?: number;
  signal?: AbortSignal;
  onProgress?: ProgressCallback;
}

export interface HashResult {
  /** Raw bytes in the image. */
  bytes: number;
  /** sha256 of the raw data. */
  sha256: string;
  /** sha256 of the compressed file. */
  fileSha256: string;
  storedBytes: number;
  seconds: number;
}
