import { EndpointError, parseHostPort } from '../net/endpoint.js';

/**
 * Transparent capture learns a connection's original destination port from the listener it arrives
 * on: the companion firewall redirects each captured port to a listener of its own (no SO_ORIGINAL_DST,
 * no native code). This is that mapping, as `serve --transparent-listen` and `firewall --transparent`
 * both read it.
 */
export interface TransparentMapping {
  /** The destination port the agent dialled (80, 443, …): the policy judges on it. */
  capturedPort: number;
  host: string;
  /** The listener's port; 0 = pick a free one. */
  port: number;
}

export class TransparentConfigError extends Error {
  override name = 'TransparentConfigError';
}

export const DEFAULT_CAPTURE_PORTS = [80, 443];
const MAX_CAPTURE_PORTS = 64;

/** "80,443" → [80, 443]: single decimal ports, no duplicates. */
export function parseCapturePorts(text: string): number[] {
  const out: number[] = [];
  for (const raw of text.split(',')) {
    const t = raw.trim();
    if (!/^[1-9][0-9]{0,4}$/.test(t) || Number(t) > 65535) throw new TransparentConfigError(`--capture-ports: bad port ${JSON.stringify(t)} (a list like 80,443)`);
    if (out.includes(Number(t))) throw new TransparentConfigError(`--capture-ports: port ${t} is listed twice`);
    out.push(Number(t));
  }
  if (out.length > MAX_CAPTURE_PORTS) throw new TransparentConfigError(`--capture-ports: at most ${MAX_CAPTURE_PORTS} ports`);
  return out;
}

/**
 * Either one `HOST:PORT` (captured port i of `capturePorts`, 0-based, is served at PORT+i; with PORT 0
 * each gets a free port of its own), or one or more `CAPTURED=HOST:PORT`, each mapping one captured port.
 * The two forms do not mix, and `--capture-ports` goes with the first only.
 */
export function parseTransparentListen(values: string[], capturePorts?: string): TransparentMapping[] {
  if (values.length === 0) {
    if (capturePorts !== undefined) throw new TransparentConfigError('--capture-ports needs --transparent-listen');
    return [];
  }
  const explicit = values.map((v) => v.includes('='));
  if (explicit.some((e) => e !== explicit[0])) throw new TransparentConfigError('--transparent-listen: use either one HOST:PORT or PORT=HOST:PORT entries, not both');
  try {
    if (!explicit[0]) {
      if (values.length > 1) throw new TransparentConfigError('--transparent-listen HOST:PORT is given once (repeat the PORT=HOST:PORT form instead)');
      const { host, port } = parseHostPort(values[0], { allowZero: true });
      const ports = capturePorts === undefined ? DEFAULT_CAPTURE_PORTS : parseCapturePorts(capturePorts);
      if (port !== 0 && port + ports.length - 1 > 65535) throw new TransparentConfigError(`--transparent-listen ${values[0]}: ${ports.length} listeners from port ${port} run past 65535`);
      return ports.map((capturedPort, i) => ({ capturedPort, host: host || '0.0.0.0', port: port === 0 ? 0 : port + i }));
    }
    if (capturePorts !== undefined) throw new TransparentConfigError('--capture-ports goes with --transparent-listen HOST:PORT; PORT=HOST:PORT names each captured port itself');
    const out: TransparentMapping[] = [];
    for (const v of values) {
      const eq = v.indexOf('=');
      const [capturedPort] = parseCapturePorts(v.slice(0, eq));
      if (out.some((m) => m.capturedPort === capturedPort)) throw new TransparentConfigError(`--transparent-listen: port ${capturedPort} is mapped twice`);
      const { host, port } = parseHostPort(v.slice(eq + 1), { allowZero: true });
      out.push({ capturedPort, host: host || '0.0.0.0', port });
    }
    return out;
  } catch (e) {
    if (e instanceof EndpointError) throw new TransparentConfigError(`--transparent-listen: ${e.message}`);
    throw e;
  }
}
