/** API errors: one code per failure kind, mapped to an HTTP status in one table. Bodies are {error, code}. */
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
  payload_too_large: 413,
  unsupported_media_type: 415,
  unsupported_format: 415,
  image_too_large: 422,
  animated_image: 422,
  overloaded: 429,
  internal: 500,
  not_ready: 503,
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
