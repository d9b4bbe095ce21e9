/** File names of the inspection CA in a certs directory; apart from ca.ts so that naming them loads no X.509 code. */
export const INSPECT_CA_FILE = 'inspect-ca.pem';
export const INSPECT_CA_KEY_FILE = 'inspect-ca-key.pem';
