/** URLs of gallery items for the explorer page; no DOM, so the tests import it too. */

/**
 * A gallery id as a URL path, each segment escaped. A URL parser resolves '.' and '..' segments
 * (encoded as %2e too), so an id holding one or an empty segment (added before such ids were
 * refused) goes as one segment with its '/' escaped, which the server's route decodes back.
 */
function idPath(id: string): string {
  const segments = id.split('/');
  if (segments.some((s) => s === '' || s === '.' || s === '..')) return encodeURIComponent(id);
  return segments.map(encodeURIComponent).join('/');
}

/** The route of one gallery item (GET, DELETE). */
export const itemUrl = (id: string) => `/v1/gallery/${idPath(id)}`;

/** The stored picture of one gallery item. */
export const imageUrl = (id: string) => `/v1/images/${idPath(id)}`;
