// Types for a TypeScript client, generated from the API's own schema with
// openapi-typescript: node generate.mjs openapi.json schema.d.ts. A binary body
// (the photo) is typed Blob, as fetch sends it, rather than string.
import { readFile, writeFile } from "node:fs/promises";
import openapiTS, { astToString } from "openapi-typescript";
import ts from "typescript";

const BLOB = ts.factory.createTypeReferenceNode(ts.factory.createIdentifier("Blob"));
const schema = JSON.parse(await readFile(process.argv[2], "utf8"));
const ast = await openapiTS(schema, {
  transform(schemaObject) {
    if (schemaObject.format === "binary") return BLOB;
  },
});
await writeFile(process.argv[3], astToString(ast));
