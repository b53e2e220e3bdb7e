// The HTTP API from another language: Node 20's built-in fetch, no npm packages.
// Usage: FASHION_API_URL=… FASHION_API_KEY=… node classify.mjs PHOTO
// Prints one JSON line: the POST's status and body, then the GET of the same job.
import { readFile } from "node:fs/promises";

const api = process.env.FASHION_API_URL;
const headers = { Authorization: `Bearer ${process.env.FASHION_API_KEY}` };

const photo = await readFile(process.argv[2]);
const posted = await fetch(`${api}/v1/classifications?wait=10`, {
  method: "POST",
  headers: { ...headers, "Content-Type": "image/png" },
  body: photo,
});
const result = await posted.json();
const read = await fetch(`${api}/v1/classifications/${result.id}`, { headers });
console.log(JSON.stringify({ status: posted.status, result, read: await read.json() }));
