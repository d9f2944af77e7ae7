export { ClusterNode } from './node.js';
