// Greets whoever is named in the event, from Node.js.
exports.handler = async (event, context) => {
  const name = event && typeof event === 'object' && event.name ? event.name : 'world';
  context.logger.info(`greeting ${name}`);
  return { message: `Hello, ${name}!`, runtime: `node ${process.version}`, function: context.functionName };
};
