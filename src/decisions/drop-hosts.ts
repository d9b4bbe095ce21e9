/**
 * Paste sites, file drops, request catchers and tunnels: services whose purpose is to take data
 * from anyone and hand it to anyone. An agent reaching one is how exfiltration looks, so
 * `policy suggest` flags them for a human instead of proposing to allow them. One list, kept here;
 * a name matches when it is the entry or a subdomain of it.
 */
export const DROP_HOSTS: readonly string[] = [
  // paste sites
  'pastebin.com', 'pastebin.pl', 'paste.ee', 'hastebin.com', 'hastebin.skyra.pw', 'hst.sh', 'dpaste.com', 'dpaste.org',
  'controlc.com', 'rentry.co', 'rentry.org', 'ghostbin.co', 'privatebin.net', 'justpaste.it', 'paste.rs', 'bpa.st',
  'pastes.dev', 'termbin.com', 'ix.io', 'sprunge.us', 'paste.centos.org', 'paste.mozilla.org', 'pastie.io',
  // gists (raw content hosts included)
  'gist.github.com', 'gist.githubusercontent.com',
  // file drops
  'transfer.sh', 'file.io', '0x0.st', 'catbox.moe', 'tmpfiles.org', 'temp.sh', 'bashupload.com', 'anonfiles.com',
  'gofile.io', 'wetransfer.com', 'we.tl', 'sendspace.com', 'mega.nz', 'uguu.se', 'pixeldrain.com', 'filebin.net',
  'oshi.at', 'keep.sh', 'free.keep.sh',
  // request catchers and out-of-band interaction hosts
  'webhook.site', 'requestbin.com', 'requestbin.net', 'pipedream.net', 'beeceptor.com', 'hookbin.com',
  'requestcatcher.com', 'postb.in', 'ptsv2.com', 'ptsv3.com', 'interact.sh', 'oast.fun', 'oast.live', 'oast.me',
  'oast.online', 'oast.pro', 'oast.site', 'oastify.com', 'burpcollaborator.net', 'dnslog.cn', 'canarytokens.com',
  // tunnels to someone's laptop
  'ngrok.io', 'ngrok.app', 'ngrok.dev', 'ngrok-free.app', 'ngrok-free.dev', 'serveo.net', 'localtunnel.me', 'loca.lt',
  'trycloudflare.com', 'localhost.run', 'lhr.life', 'pagekite.me', 'telebit.cloud',
];

const SET = new Set(DROP_HOSTS);

/** The list entry `host` falls under, or null. `host` is a normalised (lower-case, no trailing dot) name. */
export function dropHostEntry(host: string): string | null {
  for (let h = host; h.includes('.'); h = h.slice(h.indexOf('.') + 1)) if (SET.has(h)) return h;
  return null;
}
