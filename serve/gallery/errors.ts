/** A gallery that cannot be opened or written as asked: wrong model, corrupt files, a second writer. */
export class GalleryError extends Error {}
