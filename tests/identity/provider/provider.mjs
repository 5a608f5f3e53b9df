// A real OpenID provider (oidc-provider, certified) for Meshgate's identity tests.
//
//   node provider.mjs SETTINGS.json
//
// SETTINGS (written by tests/identity/provider.py):
//   issuer      "http://127.0.0.1:PORT"; the provider listens on that port
//   keys        the private signing JWKs, the first of an algorithm signs (rotation: restart
//               with a new key first and the old one after it)
//   clients     { client_id: { secret, claims: {...}, not_before_in: seconds } }: each client
//               gets tokens by the client_credentials grant, with its claims added
//   resources   { indicator: { audience, ttl, alg } }: the resource servers (RFC 8707) whose
//               access tokens are JWTs (RFC 9068) with that audience, lifetime and algorithm
//   default_resource  the indicator used when a token request names none
//
// Besides the provider's own routes, GET /test/stats answers how often the JWKS was fetched.
import { readFileSync } from 'node:fs';

import Provider, { errors } from 'oidc-provider';

const settings = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const port = Number(new URL(settings.issuer).port);

const clients = Object.entries(settings.clients).map(([id, client]) => ({
  client_id: id,
  client_secret: client.secret,
  grant_types: ['client_credentials'],
  redirect_uris: [],
  response_types: [],
  token_endpoint_auth_method: 'client_secret_post',
}));

function resourceServer(indicator) {
  const resource = settings.resources[indicator];
  if (resource === undefined) {
    throw new errors.InvalidTarget();
  }
  return {
    scope: resource.scope ?? 'sql',
    audience: resource.audience,
    accessTokenTTL: resource.ttl ?? 600,
    accessTokenFormat: 'jwt',
    jwt: { sign: { alg: resource.alg ?? 'RS256' } },
  };
}

const provider = new Provider(settings.issuer, {
  clients,
  jwks: { keys: settings.keys },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => settings.default_resource,
      useGrantedResource: () => true,
      getResourceServerInfo: (_ctx, indicator) => resourceServer(indicator),
    },
  },
  extraTokenClaims(_ctx, token) {
    const client = settings.clients[token.clientId] ?? {};
    const claims = { ...(client.claims ?? {}) };
    if (client.not_before_in !== undefined) {
      claims.nbf = Math.floor(Date.now() / 1000) + client.not_before_in;
    }
    return claims;
  },
});

let jwksRequests = 0;
provider.use(async (ctx, next) => {
  if (ctx.path === '/jwks') {
    jwksRequests += 1;
  }
  if (ctx.path === '/test/stats') {
    ctx.body = { jwks_requests: jwksRequests };
    return;
  }
  await next();
});

provider.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${settings.issuer}`);
});
