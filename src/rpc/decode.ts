// The params decoder lives in util/ (bdev modules declare their RPC methods with it); re-exported
// here for the RPC method groups.
export * from '../util/decode.js';
