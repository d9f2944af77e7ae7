export { ClusterNode } from './node.js';
export { ControlServer, requestControl, parseRequest, type ControlRequest, type ControlResult } from './control.js';
