/**
 * One colour per class (matplotlib's tab10), for the explorer page's gallery map and the figures'
 * feature maps, so a class looks the same in both. Plain data: the page's bundle imports it too.
 */
export const CLASS_COLORS: readonly string[] = [
  '#1f77b4',
  '#ff7f0e',
  '#2ca02c',
  '#d62728',
  '#9467bd',
  '#8c564b',
  '#e377c2',
  '#7f7f7f',
  '#bcbd22',
  '#17becf',
];
