'use strict';
// Preload for Node runtimes that ignore HTTP(S)_PROXY: Node 20's built-in fetch does not read them.
//   NODE_OPTIONS="--require /path/to/agent-egress/register.cjs" node agent.js
// It installs undici's EnvHttpProxyAgent as the global dispatcher, which fetch() uses; the agent honours
// HTTPS_PROXY / HTTP_PROXY / NO_PROXY (lower-case variants too). Node's http/https modules are not
// covered: tools using them directly are stopped by the companion firewall rule instead.
const { EnvHttpProxyAgent, setGlobalDispatcher } = require('undici');

const env = process.env;
if (env.HTTPS_PROXY || env.https_proxy || env.HTTP_PROXY || env.http_proxy) {
  setGlobalDispatcher(new EnvHttpProxyAgent());
}
