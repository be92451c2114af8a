/** API errors: one code per failure kind, mapped to an HTTP status in one table. Bodies are {error, code}. */
import { RuntimeError, type RuntimeErrorCode } from '../runtime/errors.ts';
import { GalleryError, type GalleryErrorKind } from './gallery/errors.ts';

export const STATUS = {
  bad_request: 400,
  invalid_json: 400,
  invalid_base64: 400,
  invalid_image: 400,
  no_images: 400,
  unauthorized: 401,
  not_found: 404,
  no_probe: 409,
  no_gallery: 409,
  no_predictor: 409,
  payload_too_large: 413,
  unsupported_media_type: 415,
  unsupported_format: 415,
  image_too_large: 422,
  aspect_ratio_too_large: 422,
  animated_image: 422,
  /** The answer asked for would be too large in that form; a compact one is offered. */
  response_too_large: 422,
  overloaded: 429,
  /** The client went away before its answer (nginx's 499); nobody reads it. */
  client_closed: 499,
  internal: 500,
  insufficient_storage: 507,
  not_ready: 503,
  /** The gallery's database cannot be reached now; the server retries it on every request. */
  gallery_unavailable: 503,
} as const;

export type ErrorCode = keyof typeof STATUS;

export class ApiError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    /** Seconds, for 429 and 503. */
    readonly retryAfter?: number,
  ) {
    super(message);
  }

  get status(): number {
    return STATUS[this.code];
  }

  toJSON(): { error: string; code: ErrorCode } {
    return { error: this.message, code: this.code };
  }
}

/** The HTTP face of a runtime failure (a refused image, a missing device). */
export function fromRuntime(e: RuntimeError): ApiError {
  return new ApiError(RUNTIME_CODES[e.code], e.message, e.code === 'busy' ? 1 : undefined);
}

const RUNTIME_CODES: Record<RuntimeErrorCode, ErrorCode> = {
  invalid_image: 'invalid_image',
  too_many_bytes: 'payload_too_large',
  unsupported_format: 'unsupported_format',
  animated_image: 'animated_image',
  image_too_large: 'image_too_large',
  aspect_ratio_too_large: 'aspect_ratio_too_large',
  device_unavailable: 'internal',
  busy: 'overloaded',
  cancelled: 'client_closed',
};

/**
 * A failed gallery write changed nothing: storage trouble is 507, a record JSON cannot hold is 400,
 * a database out of reach 503.
 */
export function fromGallery(e: GalleryError): ApiError {
  return new ApiError(GALLERY_CODES[e.kind], e.message, e.kind === 'unavailable' ? 1 : undefined);
}

const GALLERY_CODES: Record<GalleryErrorKind, ErrorCode> = {
  storage: 'insufficient_storage',
  invalid: 'bad_request',
  corrupt: 'internal',
  mismatch: 'internal',
  in_use: 'internal',
  unavailable: 'gallery_unavailable',
};

/** The API error of a failure from below the routes (runtime, gallery), or null for any other. */
export function fromLayer(e: unknown): ApiError | null {
  if (e instanceof RuntimeError) return fromRuntime(e);
  if (e instanceof GalleryError) return fromGallery(e);
  return null;
}
