// A no-op Node.js function (an ES module) with an npm dependency (bench/polyfn.yaml).
import isOdd from 'is-odd';

export const noop = async () => (isOdd(1) ? undefined : null);
