/** Every error this package raises is an SsehubError. */
export class SsehubError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A call the contract would refuse: nothing was sent. Same messages as the Python client. */
export class InvalidMessage extends SsehubError {}

/** The broker did not confirm a message after every attempt; `cause` is the last failure. */
export class PublishError extends SsehubError {}

/** A setting that no retry can fix (e.g. the deployment's queues are of another type). */
export class ConfigError extends SsehubError {}

/** The publisher was closed before the call. */
export class PublisherClosed extends SsehubError {}
