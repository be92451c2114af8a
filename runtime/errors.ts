/** The runtime layer's failures. serve/ maps each code to an HTTP status; the CLI prints the message. */
export type RuntimeErrorCode =
  | 'invalid_image'
  | 'too_many_bytes'
  | 'unsupported_format'
  | 'animated_image'
  | 'image_too_large'
  /** Longer than the limit for its width: costly to decode for its pixels, and squashed to nothing by the model. */
  | 'aspect_ratio_too_large'
  | 'device_unavailable'
  /** Too much decoding is already waiting: try again later. */
  | 'busy'
  /** The work was dropped because whoever asked for it went away. */
  | 'cancelled';

export class RuntimeError extends Error {
  constructor(
    readonly code: RuntimeErrorCode,
    message: string,
  ) {
    super(message);
  }
}
