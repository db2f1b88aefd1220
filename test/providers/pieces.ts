/**
 * Writing a response body in pieces, for the fake vendor servers: so that frames, SSE events and
 * UTF-8 characters are split across the client's reads, as a real network may split them.
 */

/** How to cut a body: every `chunkBytes`, and/or inside every multi-byte character. */
export interface PieceOptions {
  chunkBytes?: number | undefined;
  splitInsideCharacters?: boolean | undefined;
}

/** A writable response (HTTP/1.1 response or HTTP/2 stream). */
export interface PieceTarget {
  readonly destroyed: boolean;
  write(bytes: Uint8Array): unknown;
}

/** Writes `bytes` to `target` in the pieces `options` ask for, pausing between them. */
export async function writeInPieces(target: PieceTarget, bytes: Uint8Array, options: PieceOptions): Promise<void> {
  const cuts = cutPoints(bytes, options);
  if (cuts.length === 0) {
    target.write(bytes);
    return;
  }
  let start = 0;
  for (const cut of [...cuts, bytes.length]) {
    if (target.destroyed) return;
    target.write(bytes.subarray(start, cut));
    start = cut;
    // A pause makes each piece a separate read on the client, not one coalesced buffer.
    await wait(1);
  }
}

/** Offsets (ascending, inside the buffer) at which to cut `bytes` into separate writes. */
function cutPoints(bytes: Uint8Array, options: PieceOptions): number[] {
  const cuts = new Set<number>();
  if (options.chunkBytes !== undefined) {
    for (let offset = options.chunkBytes; offset < bytes.length; offset += options.chunkBytes) cuts.add(offset);
  }
  if (options.splitInsideCharacters === true) {
    for (let offset = 0; offset < bytes.length - 1; offset += 1) {
      // A lead byte of a multi-byte sequence (0b11xxxxxx): cut between it and its continuation.
      if ((bytes[offset]! & 0xc0) === 0xc0) cuts.add(offset + 1);
    }
  }
  return [...cuts].sort((a, b) => a - b);
}

/** Waits `ms` milliseconds. */
export function wait(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
