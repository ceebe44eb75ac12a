// Signs JWTs as a tenant's Node backend does, with the `jsonwebtoken` package: reads a JSON
// array of { payload, secret, alg, kid } on stdin and prints a JSON array of tokens.
import jwt from "jsonwebtoken";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const tokens = JSON.parse(input).map(({ payload, secret, alg, kid }) =>
  jwt.sign(payload, secret, { algorithm: alg, keyid: kid, noTimestamp: false }),
);
process.stdout.write(JSON.stringify(tokens));
