// Fetch the prebuilt OHIF viewer named in package.json ("ohif") from the npm registry with `npm pack`,
// check the tarball against the pinned sha512 integrity, and unpack its dist/ into .ohif/<version>/.
// Idempotent: an unpacked copy whose stamp matches the pinned integrity is kept.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const { ohif } = JSON.parse(readFileSync(join(here, 'package.json'), 'utf8'));
const version = ohif.package.split('@').pop();
const target = join(here, '.ohif', version);
const stamp = join(target, '.integrity');

if (existsSync(stamp) && readFileSync(stamp, 'utf8') === ohif.integrity) {
  console.log(target);
  process.exit(0);
}
const cache = join(here, '.ohif', 'tarballs');
mkdirSync(cache, { recursive: true });
const packed = JSON.parse(execFileSync('npm', ['pack', ohif.package, '--json', '--pack-destination', cache],
  { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }));
const tarball = join(cache, packed[0].filename);
const actual = 'sha512-' + createHash('sha512').update(readFileSync(tarball)).digest('base64');
if (actual !== ohif.integrity) {
  rmSync(tarball);
  console.error(`${ohif.package}: integrity ${actual} does not match the pinned ${ohif.integrity}`);
  process.exit(1);
}
rmSync(target, { recursive: true, force: true });
mkdirSync(target, { recursive: true });
execFileSync('tar', ['xzf', tarball, '-C', target, '--strip-components=2', 'package/dist']);
rmSync(tarball);
writeFileSync(stamp, ohif.integrity);
console.log(target);
