/** Why a gallery cannot be opened or written: each kind has its own HTTP status (serve/errors.ts). */
export type GalleryErrorKind =
  /** Its files do not hold what they say (checksums, truncation): it is not loaded. */
  | 'corrupt'
  /** Built with another model. */
  | 'mismatch'
  /** Another process has it open for writing. */
  | 'in_use'
  /** A write failed (disk full, file-size limit, I/O error); nothing of it was kept. */
  | 'storage'
  /** What was asked cannot be stored (metadata too deep to serialise). */
  | 'invalid'
  /** Its database cannot be reached now (a PostgreSQL gallery); nothing of the request was stored. */
  | 'unavailable';

export class GalleryError extends Error {
  constructor(
    readonly kind: GalleryErrorKind,
    message: string,
  ) {
    super(message);
  }
}
