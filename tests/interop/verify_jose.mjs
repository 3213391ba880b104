#!/usr/bin/env node
// Independent verifier for signetd's JWTs, built on panva's jose (the JOSE library of
// most JavaScript verifiers).
//
// Usage:
//   node verify_jose.mjs --jwks-url URL --iss ISS --aud AUD --typ TYP
//                        [--alg ES256] [--require CLAIM]... TOKEN
//
// jose is found through SIGNETD_TEST_JOSE, the URL of its entry point, which
// scripts/test.sh exports after installing tests/interop/package-lock.json into
// target/test-node.
//
// The token must be signed with --alg by the key its kid names in the JWKS, have the
// header typ --typ (jose's own typ check: media types compared as RFC 7515 says), and
// carry iss, aud, exp, iat, jti and every --require claim.
//
// Exit status: 0 valid (the claims on stdout as one JSON line); 1 invalid
// ("INVALID: <code> <reason>" on stderr); 2 bad command line.

import { parseArgs } from 'node:util';

function usage(message) {
  console.error(`verify_jose.mjs: ${message}`);
  process.exit(2);
}

let args;
try {
  args = parseArgs({
    allowPositionals: true,
    options: {
      'jwks-url': { type: 'string' },
      iss: { type: 'string' },
      aud: { type: 'string' },
      typ: { type: 'string' },
      alg: { type: 'string', default: 'ES256' },
      require: { type: 'string', multiple: true, default: [] },
    },
  });
} catch (e) {
  usage(e.message);
}
const { values, positionals } = args;
for (const name of ['jwks-url', 'iss', 'aud', 'typ']) {
  if (!values[name]) usage(`--${name} is required`);
}
if (positionals.length !== 1) usage('give exactly one TOKEN');
if (!process.env.SIGNETD_TEST_JOSE) {
  usage('SIGNETD_TEST_JOSE is not set: run the tests through scripts/test.sh, which installs jose');
}

const { createRemoteJWKSet, jwtVerify } = await import(process.env.SIGNETD_TEST_JOSE);

try {
  const keys = createRemoteJWKSet(new URL(values['jwks-url']));
  const { payload } = await jwtVerify(positionals[0], keys, {
    issuer: values.iss,
    audience: values.aud,
    typ: values.typ,
    algorithms: [values.alg],
    requiredClaims: ['exp', 'iat', 'jti', ...values.require],
  });
  console.log(JSON.stringify(payload));
} catch (e) {
  console.error(`INVALID: ${e.code ?? e.name} ${e.message}`);
  process.exit(1);
}
