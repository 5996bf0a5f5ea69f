// The only way the qcow2 engine touches its image: an async byte-addressed file. The engine has
// no file-system calls of its own so the same code can run over node:fs (tests), io_uring on a
// reactor, or an in-memory buffer (crash tests).

export interface ImageFile {
  /** Reads exactly buf.length bytes at offset; bytes past EOF read as zero. */
  read(buf: Uint8Array, offset: number): Promise<void>;
  write(buf: Uint8Array, offset: number): Promise<void>;
  flush(): Promise<void>;
  /** Current size in bytes. */
  size(): number;
  /** Optional: punch a hole / discard (used when freeing clusters); may be a no-op. */
  discard?(offset: number, length: number): Promise<void>;
}
